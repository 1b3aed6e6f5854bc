"""In-process faces of the engine, for programs that cannot or need not mount: an fsspec
filesystem (protocol ``refmount``) and a read-only zarr-python 3 store. Both are thin."""
