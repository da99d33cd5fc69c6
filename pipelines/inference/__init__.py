"""The shipped models at run time: detector, FP classifier, fusion model, explanations."""
