"""The bundled demo CT: a real LIDC-IDRI chest CT, cropped and downsampled (DERIVED DATA).

NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

#: The shipped volume and its human-readable truth, in ``resources/demo/``.
DEMO_NPZ_NAME = "lidc_demo.npz"
DEMO_TRUTH_NAME = "lidc_demo_truth.json"

LIDC_LICENCE = "Creative Commons Attribution 3.0 Unported (CC BY 3.0)"
#: The citations TCIA asks for when LIDC-IDRI data is used or redistributed.
LIDC_CITATIONS = (
    "Armato SG 3rd, McLennan G, Bidaut L, et al. The Lung Image Database Consortium (LIDC) and Image Database "
    "Resource Initiative (IDRI): a completed reference database of lung nodules on CT scans. Medical Physics "
    "38(2):915-931, 2011. doi:10.1118/1.3528204",
    "Armato SG 3rd, et al. Data From LIDC-IDRI [Data set]. The Cancer Imaging Archive, 2015. "
    "doi:10.7937/K9/TCIA.2015.LO9QL9SX",
    "Clark K, et al. The Cancer Imaging Archive (TCIA). Journal of Digital Imaging 26(6):1045-1057, 2013. "
    "doi:10.1007/s10278-013-9622-7",
)
