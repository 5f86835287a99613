"""File formats prunus writes and reads, none of them pickle.

- `model_dir`: a model directory = `model.safetensors` + `model.json` (`save` / `load`).

Example:
    >>> import tempfile, prunus
    >>> from prunus.formats import load, save
    >>> d = tempfile.mkdtemp()
    >>> _ = save(prunus.create_model("lenet5", in_channels=1), d, input_shape=(1, 28, 28))
    >>> type(load(d)).__name__
    'LeNet5'
"""

from prunus.formats.model_dir import MODEL_JSON as MODEL_JSON
from prunus.formats.model_dir import MODEL_WEIGHTS as MODEL_WEIGHTS
from prunus.formats.model_dir import load as load
from prunus.formats.model_dir import read_model_json as read_model_json
from prunus.formats.model_dir import save as save

__all__ = ["MODEL_JSON", "MODEL_WEIGHTS", "load", "read_model_json", "save"]
