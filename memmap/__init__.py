"""memmap: accelerator memory mapping."""
