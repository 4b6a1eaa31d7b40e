"""`imcc finetune`: mapping-aware fine-tuning of a model through its crossbar datapath in torch.

The crossbar layers run backend/datapath.py's datapath with its straight-through gradients;
`layers.py` wraps one layer (quantizers, weights, MTJ normalisation), `module.py` builds a
torch module from a mapped program, `train.py` trains it, `export.py` writes the fine-tuned
weights back into the ONNX model, and `session.py` runs the whole command: map, measure,
fine-tune, export, re-map and measure with the bit-accurate simulator.
"""
