"""Report understanding: nodule claim extraction and the text features the fusion model reads."""
