"""leukoscreen.workflows: many-slide batch runs on SLURM/PBS clusters via dask-jobqueue."""
