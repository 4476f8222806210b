"""``python -m training replicate``: the small-scale replication of the paper's central claim (random init vs
CVRL vs ConST-CL vs ConST-CL with context length 0, same budget, several seeds, holistic and local tasks) and the
training of the package's default model."""
