"""Modules with parameters: the operator skeleton and registry, kernel layers (spectral, spherical, graph),
factorised weights, real-valued layers, the operators (FNO, TFNO, U-NO, SFNO, GINO, FNO-GNO), normalisation,
and losses."""
