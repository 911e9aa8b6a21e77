"""Default sizes of the encoders built from a config (no pretrained folder), as plain numbers.

The one set of defaults that `student.xvlm.XVLMConfig`, `XVLMConfig.build` and the command line
(`pipeline.options.ModelOptions`) share; kept apart from `student/xvlm.py` so that the command line
reads them without importing torch.
"""

HIDDEN_SIZE = 64
NUM_LAYERS = 2
NUM_HEADS = 2
PATCH_SIZE = 8
MAX_LENGTH = 32  # tokens of "[CLS] title [SEP] ocr [SEP]"
VOCAB_SIZE = 2000  # of the WordPiece tokenizer trained when no text model is given
FUSION_LAYERS = 1
