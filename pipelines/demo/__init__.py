"""The bundled synthetic demo case: phantom, nodule shapes, DICOM writer and report."""
