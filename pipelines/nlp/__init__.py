"""Report understanding: nodule claim extraction and the text features the fusion model reads.

:mod:`.claims` is the API (``extract_claims``, ``NoduleClaim``, ``ReportClaims``); it runs
:mod:`.sentences` (masking, sentence segmentation, heads and scopes), :mod:`.attributes`
(size, location, descriptors, negation, uncertainty) and :mod:`.mentions` (draft claims per
head) over the patterns of :mod:`.lexicon`.  :mod:`.text_features` turns claims into features.
"""
