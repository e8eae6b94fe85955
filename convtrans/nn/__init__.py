"""Token mixers and their decode caches; one self-contained file per mixer. Never imports triton."""
