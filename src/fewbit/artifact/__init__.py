"""The `.fewbit` artifact, torch-free: the file format and bit packing.

Everything here needs numpy only, so compress (which builds packed tensors), deploy (which
writes them) and the runtime (which reads them) share one description of a stored model.
"""
