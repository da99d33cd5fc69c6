"""Reading inputs: DICOM (fast header reader, series discovery and assembly, multi-frame), NIfTI, reports."""
