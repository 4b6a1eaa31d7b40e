"""`imcc finetune`: mapping-aware fine-tuning of a model through its crossbar datapath in torch.

`datapath.py` re-expresses backend/crossbar.py in torch with straight-through gradients,
`module.py` builds a torch module from a mapped program, `train.py` trains it, `export.py`
writes the fine-tuned weights back into the ONNX model, and `session.py` runs the whole
command: map, measure, fine-tune, export, re-map and measure with the bit-accurate simulator.
"""
