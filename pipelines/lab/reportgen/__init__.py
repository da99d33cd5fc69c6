"""Synthetic free-text chest-CT reports rendered from one LIDC reader's ratings.

Research software, NOT for diagnostic use.

Purpose: training text for the report branch.  One report is rendered per (nodule,
reader) of the LIDC database from THAT reader's semantic ratings
(:class:`~lungfuse.pipelines.lab.lidc.NoduleRatings`: texture, calcification, margin,
spiculation, lobulation, sphericity, internalStructure, subtlety) plus the measured size
(mm) and location (side, lobe).

The malignancy rating is the label of the classification task and must never leak into
the text: :class:`ReportSpec` has no field that could carry it and
:class:`~lungfuse.pipelines.lab.lidc.NoduleRatings` has none either.  The IMPRESSION may
state an interpretation ("suspicious for malignancy", "benign-appearing calcified
granuloma") and a Lung-RADS category, but both are derived *only* from the descriptors
that the report keeps (see :func:`.phrases.interpretation` and
:func:`.phrases.lung_rads_category`), exactly as a radiologist reasons from what they describe.

Main entry points (exported here; the package's modules: :mod:`.spec` the data model,
:mod:`.phrases` the descriptor wordings and the reading of them, :mod:`.sections` the
skeleton and layout, :mod:`.typos`, :mod:`.generate` the rendering)
---------------------------------------------------------------------------------------
* :class:`ReportSpec` - what is true about the nodule (validated at construction).
* :class:`ReportStyle` - how the report is written (completeness, typos, distractor
  findings, layout, abbreviations, headers).
* :func:`generate_report` - ``(spec, style, rng) -> GeneratedReport``; deterministic for
  a given ``numpy.random.Generator`` state.
* :func:`sample_style` - the style distribution used for training.
* :data:`MISSING_REPORT` - ``None``: the value a caller stores for a (nodule, reader)
  whose report is simulated as *missing*.  Producing no text is the caller's business;
  :func:`generate_report` always returns a report.

Completeness
------------
The seven descriptors of :data:`DESCRIPTORS` (size, location, texture, margin,
calcification, shape, impression) are those scored by
:func:`lungfuse.pipelines.nlp.claims.completeness_score`.  ``completeness_target`` t keeps
``floor(7 t + U)`` of them (stochastic rounding, so the expected kept fraction is t),
chosen at random with weights that favour size and location (the descriptors that real
terse reports keep).  "impression" dropped means the report has no IMPRESSION section.
A dropped descriptor leaves no trace: no word of it appears anywhere in the report, the
impression included, and the impression's interpretation and Lung-RADS category use the
kept descriptors only.

Several phrasings were chosen so that one descriptor's words are not read as another
descriptor by the rule-based parser (and, more to the point, by a reader): e.g. the
word "lobulated" alone also names a *shape*, so lobulation is written "lobular margins"
or "lobulation" when the shape is dropped, and "irregular" is only used as "irregular
margins" (a bare "irregular nodule" would state a shape).  Attenuation is written
"soft tissue / ground-glass attenuation", never "... density" after the noun: "a density"
is itself a finding, so the phrase would read as a second object and take the
descriptors that follow it.  Negated words ("non-calcified", "without calcification")
always come after every other descriptor of their clause, because a negation cue
reaches forward ("non-calcified nodule with smooth margins" can be read as "not smooth").

Size: the figure is the diameter rounded to 1 mm (or 0.1 cm; "8 x 6 mm" gives the
diameter as the largest figure).  Below 1 cm and only when ``completeness_target`` < 1,
one size in ten is written without a figure ("subcentimeter", "measuring less than
1 cm"): a size statement, so "size" counts as kept, but not a number; a fully complete
report always gives the figure.  When size is dropped, vague words ("small", "tiny")
may still appear, as in real terse reports; they are not a size statement.
"""

from lungfuse.pipelines.lab.reportgen.generate import generate_report, sample_style
from lungfuse.pipelines.lab.reportgen.spec import (
    DESCRIPTORS,
    HEADER_STYLES,
    LOBES,
    MISSING_REPORT,
    GeneratedReport,
    NoduleMention,
    ReportSpec,
    ReportStyle,
    texture_category,
)

__all__ = [
    "DESCRIPTORS",
    "HEADER_STYLES",
    "LOBES",
    "MISSING_REPORT",
    "GeneratedReport",
    "NoduleMention",
    "ReportSpec",
    "ReportStyle",
    "generate_report",
    "sample_style",
    "texture_category",
]
