"""Parameter-free arithmetic in any precision: half products with float32 accumulation,
truncated Fourier transforms, planned complex contractions and stabilizers.

Nothing here holds parameters or imports :mod:`mpno.nn` or :mod:`mpno.run`.
"""
