"""Constants that more than one stage of the pipeline reads (each stage's own settings live with it)."""

#: default embedding width of every encoder, of the metric head and of the index
EMBEDDING_DIM = 256
#: probe inputs per network: the encoders' probe pass runs this many, and a zoo's
#: ``probe_inputs.npz`` holds this many per input shape
NUM_PROBES = 64
