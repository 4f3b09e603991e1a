"""Canonicalization autoencoder (the second seed): an invariant encoder maps a network to a latent
vector, a decoder writes one canonical network of a fixed target architecture, trained by what the
networks compute."""
from pipeline.autoencoder.functional import functional_loss, outputs, probe_inputs, stack
from pipeline.autoencoder.model import Autoencoder
from pipeline.autoencoder.target import TargetArchitecture, UnsupportedArchitecture, target_of

__all__ = ["Autoencoder", "TargetArchitecture", "UnsupportedArchitecture", "functional_loss", "outputs",
           "probe_inputs", "stack", "target_of"]
