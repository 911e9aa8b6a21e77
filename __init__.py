"""cpfd: Confidence-aware Privileged Feature Distillation (Shi et al., CIKM 2024).

The repository's folders install as this package: `cpfd.storage` (files on disk), `cpfd.student`
and `cpfd.teacher` (the models, the CPFD loss), `cpfd.pipeline` (data, the training loop, the
stages, the experiment) and `cpfd.cli` (the `cpfd` command). The method's two functions for your
own loop are `cpfd.student.cpfd.alpha_from_loss` and `cpfd.student.cpfd.cpfd_loss`.
"""
