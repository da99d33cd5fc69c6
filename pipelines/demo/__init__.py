"""The bundled synthetic demo case: :mod:`.case` (``make_demo_case``, ``DemoCase``) builds it from the
anatomy (:mod:`.phantom`), the LIDC nodule shapes (:mod:`.shapes`, placed by :mod:`.nodules`), the
DICOM writer (:mod:`.dicom_writer`) and the report text (:mod:`.report`)."""
