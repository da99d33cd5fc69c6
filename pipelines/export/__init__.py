"""Exports of a CaseResult (issue 23): JSON and CSV so far; PDF, DICOM SR/SEG/SC planned.

Research software, NOT for diagnostic use.  Layer: above ``analysis`` (no Qt).
"""
