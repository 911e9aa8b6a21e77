"""cpfd: Confidence-aware Privileged Feature Distillation (Shi et al., CIKM 2024).

The repository's folders install as this package, one folder per part of the product
(docs/architecture.md): `cpfd.storage` (everything on disk), `cpfd.pipeline` (what both stages
run on: data, the training loop, scoring), `cpfd.teacher` (stage one: DF-X-VLM, teacher training,
dump-teacher), `cpfd.student` (stage two: X-VLM, the CPFD loss, distill, predict),
`cpfd.experiment` (`cpfd experiment`, its report, the synthetic corpus) and `cpfd.cli` (the
`cpfd` command). The method's two functions for your own loop are
`cpfd.student.cpfd.alpha_from_loss` and `cpfd.student.cpfd.cpfd_loss`.
"""


def version() -> str:
    """The installed distribution's version (what `cpfd --version` says and dumps record);
    "0+unknown" for a plain checkout that was never installed."""
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("cpfd")
    except PackageNotFoundError:
        return "0+unknown"
