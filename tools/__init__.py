"""Developer and operator tools around the serving runtime: archive builder, TorchServe runner, demo, the `geoseg` command line. Never imported by the TorchServe worker."""
