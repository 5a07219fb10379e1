"""The paper's tables and figures from the workflow's result files: ``tables`` (1, 2, 5, the lr
sweep), ``studies`` (3, 4, 6, 7 and the data of Figures 2-6), ``figures`` (drawing), ``markdown``
and ``paper`` (our numbers beside the paper's)."""
