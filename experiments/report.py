"""Write the evaluation report (Markdown tables + figures) from the run JSONs under a workdir.

    python experiments/report.py --workdir=DIR [--output_dir=DIR/report]
"""
from absl import flags

from ecgjax import cli
from ecgjax.eval.report import write_report

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory tree holding run JSONs.", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write report.md and PNGs "
                                  "(default: WORKDIR/report).")


def main(argv):
    del argv
    for path in write_report(_WORKDIR.value, _OUTPUT_DIR.value):
        print(path)


if __name__ == "__main__":
    cli.run(main)
