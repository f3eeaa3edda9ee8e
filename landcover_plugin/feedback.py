"""Errors shown to the user: the message bar entry for each error kind and the action it offers.

The kind (from the contract, the same whether the error arose in QGIS or in the worker) decides
what the user is offered, never the message text: a missing dependency offers setting up the
managed runtime and opens the dialog at the Worker Python field, a model problem at the model
list, an output problem at the output file. Every error also gets a Details button with the
whole message and the worker's log, so nothing is clipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtWidgets import QMessageBox, QPushButton

from .errors import LandcoverError

LOG_TAG = "Landcover"
#: Dynamic property set on every message-bar item the plugin pushes, so a new run can take back the previous
#: run's messages (and only Landcover's: other plugins' messages are left alone).
MESSAGE_PROPERTY = "landcoverMessage"


def tag(item):
    """Mark a message-bar item as Landcover's (see :func:`clear_messages`); returns it."""
    item.setProperty(MESSAGE_PROPERTY, True)
    return item


def push_message(bar, title: str, text: str, level: int = Qgis.Info, duration: int = 5):
    """``bar.pushMessage`` for Landcover: the item is tagged so :func:`clear_messages` can remove it."""
    item = tag(bar.createMessage(title, text))
    bar.pushWidget(item, level, duration)
    return item


def landcover_messages(bar) -> list:
    """The Landcover items in ``bar`` (newest last)."""
    return [item for item in bar.items() if item.property(MESSAGE_PROPERTY)]


def clear_messages(bar) -> int:
    """Remove every Landcover message from ``bar`` (errors, warnings, results of earlier runs); how many."""
    items = landcover_messages(bar)
    for item in items:
        bar.popWidget(item)
    return len(items)


@dataclass(frozen=True)
class ErrorAction:
    """How an error kind is presented: title, message-bar level and the dialog field that fixes it."""

    title: str
    level: int
    button: str = ""  # label of the button that opens the dialog at ``focus``; empty: no such button
    focus: str = ""  # a field name the dialog's focus_field() knows


ACTIONS: dict[str, ErrorAction] = {
    "input": ErrorAction("Landcover: check the input", Qgis.Critical, "Change input…", "layer"),
    "model": ErrorAction("Landcover: model problem", Qgis.Critical, "Choose model…", "model"),
    "dependency": ErrorAction("Landcover: the worker Python cannot run models", Qgis.Critical, "Worker Python…",
                              "worker_python"),
    "output": ErrorAction("Landcover: cannot write the result", Qgis.Critical, "Choose output…", "output"),
    "cancelled": ErrorAction("Landcover", Qgis.Info),
    "internal": ErrorAction("Landcover: unexpected error", Qgis.Critical),
}


def action_for(error: LandcoverError) -> ErrorAction:
    """The presentation of ``error``'s kind (unknown kinds are internal)."""
    return ACTIONS.get(error.kind, ACTIONS["internal"])


def show_details(parent, error: LandcoverError) -> None:
    """A dialog with the whole message, its kind and the worker's log."""
    box = QMessageBox(QMessageBox.Critical if error.kind != "cancelled" else QMessageBox.Information,
                      action_for(error).title, str(error), QMessageBox.Close, parent)
    if error.details:
        box.setDetailedText(error.details)
    box.exec_()


def push_error(bar, error: LandcoverError, open_dialog: Callable[[str], None] | None = None, parent=None,
               setup_runtime: Callable[[], object] | None = None) -> None:
    """Show ``error`` in the message bar ``bar`` with its kind's action and a Details button; log it too.

    Args:
        open_dialog: opens the Landcover dialog at a field (see :class:`ErrorAction`); None hides that button.
        setup_runtime: starts the managed runtime's setup; offered first for dependency errors.
    """
    action = action_for(error)
    QgsMessageLog.logMessage(f"{error} [{error.kind}]\n{error.details}".strip(), LOG_TAG, action.level)
    item = tag(bar.createMessage(action.title, str(error)))
    if error.kind == "dependency" and setup_runtime is not None:
        _add_setup_button(item, setup_runtime)
    if action.button and open_dialog is not None:
        fix = QPushButton(action.button, item)
        fix.setObjectName(f"landcoverFix_{action.focus}")
        fix.clicked.connect(lambda: open_dialog(action.focus))
        item.layout().addWidget(fix)
    if error.kind != "cancelled":
        _add_details_button(item, parent, error)
    bar.pushWidget(item, action.level, 0 if action.level == Qgis.Critical else 5)


def _add_setup_button(item, setup_runtime: Callable[[], object]) -> None:
    from .runtime_ui import offer_label, offer_tooltip  # runtime_ui imports this module

    button = QPushButton(offer_label(), item)
    button.setObjectName("landcoverSetupRuntime")
    button.setToolTip(offer_tooltip())
    button.clicked.connect(lambda: setup_runtime())
    item.layout().addWidget(button)


def _add_details_button(item, parent, error: LandcoverError) -> None:
    details = QPushButton("Details", item)
    details.setObjectName("landcoverDetails")
    details.clicked.connect(lambda: show_details(parent, error))
    item.layout().addWidget(details)


def push_setup_offer(bar, message: str, setup_runtime: Callable[[], object], error: LandcoverError | None = None,
                     parent=None) -> None:
    """Offer the managed runtime's setup (no usable worker yet) without calling it an error.

    ``message`` is a few words; ``error`` (why no worker is usable, and the other ways out) goes to Details.
    """
    item = tag(bar.createMessage("Landcover", message))
    _add_setup_button(item, setup_runtime)
    if error is not None:
        _add_details_button(item, parent, error)
    bar.pushWidget(item, Qgis.Warning, 0)


def push_result(bar, title: str, text: str, show_table: Callable[[], object] | None = None):
    """A finished run's summary: stays until dismissed (or until the next run clears it), with an
    **Area table…** button that opens the class areas as a table."""
    item = tag(bar.createMessage(title, text))
    if show_table is not None:
        button = QPushButton("Area table…", item)
        button.setObjectName("landcoverAreaTable")
        button.setToolTip("The area of each class in ha, m² and % of the classified pixels")
        button.clicked.connect(lambda: show_table())
        item.layout().addWidget(button)
    bar.pushWidget(item, Qgis.Success, 0)
    return item
