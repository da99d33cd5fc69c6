"""Image processing: preprocessing to the model grid, lung mask, crops and nodule measurement."""
