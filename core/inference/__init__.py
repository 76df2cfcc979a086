"""Apply a checkpoint to new exams (`orthofed predict`), framework-free.

A study folder -> views by geometry (`study`, `headers`, `checks`) -> the checkpoint's
preprocessing and model (`model`) -> outputs: `prediction.json` and, for the knee, the
segmentation back on the original sagittal grid (`geometry`, `outputs`) as NIfTI and as a DICOM
Segmentation (`dicom_seg`, names and colours in `structures`), plus `report.html` (`report`).
`pipeline` runs one study, `batch` many, each failing on its own.
"""
