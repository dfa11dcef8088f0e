"""Data: images in memory, the file formats (IDX, npz/npy, image folders) and the named data sets."""
