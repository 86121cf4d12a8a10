"""The course's own machinery: what a notebook starts with, its exercises, and the book built from them.

    data = course_data()                        # real MVTec AD under $PADIM_DATA, else the embedded set
    show_source(GaussianStats.update)           # the exact code the pipeline runs
    check_exercise("3.1", my_cov, stats=stats, position=10)

Modules: `notebook` (settings, data, listings, claims, exercise checks), `exercises` (one module per
chapter), `book` (`make course`: executes the notebooks and renders the site).
"""

from ..config import env_flag
from ..markdown import markdown_table
from .notebook import (CourseData, STCData, check_exercise, compare, course_data, env_device, environment_report,
                       show, show_source, solved, stc_data)

__all__ = ["env_flag", "env_device", "course_data", "CourseData", "stc_data", "STCData", "environment_report",
           "show_source", "show", "markdown_table", "check_exercise", "solved", "compare"]
