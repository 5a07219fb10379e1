"""Running model-generated code: the harness that calls a candidate and judges its answers
(``harness``), the kernel walls around each run (``contain``), the plain-data wire between them
(``wire``) and the contained interpreter's first code (``child``)."""
