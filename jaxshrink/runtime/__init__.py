"""What runs an experiment's stages on a machine or a job of several processes.

* `job`: the configured pieces shared by the stages (data, model, task, trainer, the
  compiled programs); `stages`: initial training, retraining variants, minimization
  rounds, each resumed from its newest checkpoint; `progress`: the progress lines;
* `checkpoint`: orbax persistence of run state; `workdir`: the workdir's lock and the
  resume check; `distributed`: several processes as one job; `compile_cache`: XLA's
  compiled programs kept on disk for the command line.
"""
