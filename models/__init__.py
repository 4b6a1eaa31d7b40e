"""Model definitions and training scripts of the reference networks (`imcc.models`).

Each module is also a script (`python -m imcc.models.fashion_cnn --help`); models/README.md
lists the committed ONNX files and the command lines that made them.
"""
