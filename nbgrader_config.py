"""nbgrader configuration: the repository root is the course directory."""
import os

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades

from autograder.grading import ClashGrade

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.course_id = "clash-of-frameworks"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# Grading: the isolated checker decides every grade cell in place of running the student's kernel (Execute),
# so nothing the submission does in its own process can change a grade, and no stderr noise zeroes a cell.
c.Autograde.autograde_preprocessors = [ClashGrade, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
# The exchange (release, fetch, submit, collect, feedback) is a shared folder outside the repository, which every
# user of the class can reach: nbgrader's default, /srv/nbgrader/exchange, unless the deployment's own nbgrader
# config (system-wide, e.g. /etc/jupyter/nbgrader_config.py) sets c.Exchange.root. Not set here, so that it can.
