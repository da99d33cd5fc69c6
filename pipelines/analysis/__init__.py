"""Case analysis: Case, AnalysisSettings, CaseResult, the stages, consistency rules and guidance."""
