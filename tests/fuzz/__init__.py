"""Property-based fuzzing (hypothesis): random valid DeformConv problems against the float64 reference,
random invalid ones against the validation, random request bodies against the server. The budget is the
hypothesis profile of tests/conftest.py: "ci" (fixed examples) by default, "fuzz" with ``pytest --fuzz``."""
