"""glmix_core: generalized linear mixed models (GLMix) fit by parallel block coordinate descent."""
