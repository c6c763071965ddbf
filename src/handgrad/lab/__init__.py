"""The "MNIST from scratch" lab: a single-file NumPy network a learner writes by hand.

- :mod:`~handgrad.lab.starter`: the file a learner starts from (``handgrad lab start``):
  the contract, docstrings and TODOs.
- :mod:`~handgrad.lab.answer`: handgrad's own answer (``handgrad lab export``).
- :mod:`~handgrad.lab.checker`: names the classic bugs in a file in seconds
  (``handgrad lab check``).
- :mod:`~handgrad.lab.grader`: trains and tests a file under the lab's rules
  (``handgrad lab grade``).

The two files are standalone (NumPy only, Python 3.8+); checker and grader run
them in a child process (:mod:`~handgrad.lab._sandbox`; the grader isolates it where it
runs as root on Linux, :mod:`~handgrad.lab._isolate`).
"""

from handgrad.lab.answer import NeuralNetwork
from handgrad.lab.checker import CheckResult, check
from handgrad.lab.findings import Finding
from handgrad.lab.grader import GradeResult, grade
from handgrad.lab.handout import ANSWER_SOURCE, STARTER_SOURCE, export_lab, start_lab

__all__ = [
    "ANSWER_SOURCE",
    "STARTER_SOURCE",
    "CheckResult",
    "Finding",
    "GradeResult",
    "NeuralNetwork",
    "check",
    "export_lab",
    "grade",
    "start_lab",
]
