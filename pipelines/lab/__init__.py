"""The training lab: LIDC database and library, insertion, report generation, training, evaluation."""
