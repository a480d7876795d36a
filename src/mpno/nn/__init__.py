"""Modules with parameters: spectral convolutions, factorised weights, real-valued layers,
the operators (FNO, TFNO), normalisation, and losses."""
