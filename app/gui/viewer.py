"""The slice viewer: three synchronised views (axial, coronal, sagittal) of one :class:`Scene`.

Research software, NOT for diagnostic use.

Mouse: left click/drag moves the crosshair (the other two views follow); the wheel steps
slices (Ctrl+wheel zooms); right drag changes the window (horizontal: width, vertical: level);
middle drag or Shift+left drag pans.  Pixels are drawn with the voxel spacing's aspect ratio.
The picture itself comes from :meth:`Scene.compose` (numpy); this module only turns it into a
QImage and draws the crosshair, the finding boxes and their ids on top.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QWheelEvent
from PySide6.QtWidgets import QHBoxLayout, QSlider, QVBoxLayout, QWidget

from lungfuse.app.gui.render import VIEW_AXES, VIEWS
from lungfuse.app.gui.scene import BOX_RGB, READER_RGB, SELECTED_RGB, Scene

__all__ = ["SliceView", "ViewerPanel"]

#: screen-space letters at the left and right edge of each view (radiological convention)
_SIDE_LABELS = {"axial": ("R", "L"), "coronal": ("R", "L"), "sagittal": ("A", "P")}


class SliceView(QWidget):
    """One view of the scene.  Signals carry voxel coordinates (z, y, x) as floats."""

    cursor_moved = Signal()              # the crosshair or the slice changed (all views repaint)
    hovered = Signal(float, float, float)  # the voxel under the mouse
    window_changed = Signal()
    clicked_voxel = Signal(float, float, float)  # a left click while a click is being asked for

    def __init__(self, view: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self.scene: Scene | None = None
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)
        self.pick_mode = False  # when true a left click emits clicked_voxel (the reader adds a nodule)
        self._drag: tuple[str, QPointF, tuple[float, float]] | None = None
        self._image: QImage | None = None
        self._rgb: np.ndarray | None = None  # keeps the QImage's buffer alive
        self._key: tuple[object, ...] | None = None  # what the cached picture was composed from
        self.setMinimumSize(160, 160)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    # -- geometry --------------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        """Where the displayed plane sits in widget pixels (aspect from the voxel spacing)."""
        assert self.scene is not None
        nr, nc = self.scene.plane_shape(self.view)
        pr, pc = self.scene.pixel_mm(self.view)
        w_mm, h_mm = nc * pc, nr * pr
        s = min(self.width() / w_mm, self.height() / h_mm) * self.zoom
        w, h = w_mm * s, h_mm * s
        return QRectF(self.width() / 2 - w / 2 + self.pan.x(), self.height() / 2 - h / 2 + self.pan.y(), w, h)

    def to_widget(self, drow: float, dcol: float) -> QPointF:
        """Displayed (row, col), pixel centres at integers -> widget point."""
        assert self.scene is not None
        r = self.image_rect()
        nr, nc = self.scene.plane_shape(self.view)
        return QPointF(r.left() + (dcol + 0.5) * r.width() / nc, r.top() + (drow + 0.5) * r.height() / nr)

    def to_display(self, p: QPointF) -> tuple[float, float]:
        """Widget point -> displayed (row, col)."""
        assert self.scene is not None
        r = self.image_rect()
        nr, nc = self.scene.plane_shape(self.view)
        return (p.y() - r.top()) * nr / r.height() - 0.5, (p.x() - r.left()) * nc / r.width() - 0.5

    def _image_key(self) -> tuple[object, ...]:
        """Everything :meth:`Scene.compose` of this view depends on: the picture is recomposed only
        when it changes (scrolling the axial slice then redraws only the crosshair of the other two)."""
        sc = self.scene
        assert sc is not None
        return (id(sc), sc.cursor[VIEW_AXES[self.view][0]], sc.window, sc.slab_mode, sc.slab_mm,
                tuple(sorted(sc.show.items())), sc.heat_kind, sc.opacity, sc.ai_visible,
                tuple(id(f) for f in sc.findings))

    def render_image(self) -> QImage:
        """The composed picture as a QImage (RGB888, sharing the numpy buffer)."""
        assert self.scene is not None
        key = self._image_key()
        if self._image is not None and key == self._key:
            return self._image
        self._key = key
        self._rgb = self.scene.compose(self.view)
        h, w, _ = self._rgb.shape
        self._image = QImage(self._rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        return self._image

    # -- painting --------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0))
        if self.scene is None:
            p.setPen(QColor(160, 160, 160))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "open a CT (File > Open)")
            p.end()
            return
        rect = self.image_rect()
        img = self.render_image()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.zoom < 1.5)
        p.drawImage(rect, img)
        self._draw_crosshair(p)
        self._draw_boxes(p)
        self._draw_corner_text(p)
        p.end()

    def _draw_crosshair(self, p: QPainter) -> None:
        assert self.scene is not None
        _, r_ax, c_ax = VIEW_AXES[self.view]
        cur = self.scene.cursor
        drow, dcol = self.scene.to_display(self.view, cur[r_ax], cur[c_ax])
        pt = self.to_widget(drow, dcol)
        pen = QPen(QColor(255, 80, 80, 150))
        pen.setWidth(1)
        p.setPen(pen)
        gap = 12.0  # leave the voxel under the crosshair visible
        p.drawLine(QPointF(0, pt.y()), QPointF(pt.x() - gap, pt.y()))
        p.drawLine(QPointF(pt.x() + gap, pt.y()), QPointF(self.width(), pt.y()))
        p.drawLine(QPointF(pt.x(), 0), QPointF(pt.x(), pt.y() - gap))
        p.drawLine(QPointF(pt.x(), pt.y() + gap), QPointF(pt.x(), self.height()))

    def _draw_boxes(self, p: QPainter) -> None:
        assert self.scene is not None
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF(), 9.0))
        font.setBold(True)
        p.setFont(font)
        fm = QFontMetrics(font)
        drawn = []
        # the selected finding last, so its box and label sit on top
        for fid, (r0, c0, r1, c1), selected, reader in sorted(self.scene.boxes(self.view), key=lambda b: b[2]):
            box = QRectF(self.to_widget(r0, c0), self.to_widget(r1, c1)).normalized()
            drawn.append((fid, box, selected, reader))
        boxes = [b for _, b, _, _ in drawn]
        # labels are placed selected first (it gets the spot above its box), drawn selected last
        placed: list[QRectF] = []
        where: dict[str, QRectF] = {}
        for fid, box, _, _ in reversed(drawn):
            tw, th = fm.horizontalAdvance(fid) + 6, fm.height() + 2
            where[fid] = self._label_place(box, tw, th, [q for q in boxes if q is not box], placed)
            placed.append(where[fid])
        for fid, box, selected, reader in drawn:
            rgb = SELECTED_RGB if selected else (READER_RGB if reader else BOX_RGB)
            pen = QPen(QColor(*rgb))
            pen.setWidth(2 if selected else 1)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(box)
            label = where[fid]
            p.fillRect(label, QColor(0, 0, 0, 170))
            p.drawText(label, Qt.AlignmentFlag.AlignCenter, fid)

    def _label_place(self, box: QRectF, tw: float, th: float, others: list[QRectF], placed: list[QRectF]) -> QRectF:
        """Where a finding's id goes (widget pixels): above its box, else below, left, right (then
        further out), the first spot that covers no other box, no label already placed and stays
        inside the view; findings close together (F3 and F6 on LIDC-IDRI-0003) keep readable ids."""
        cands = []
        for k in range(4):  # rings further out when every side of the box is taken
            d = k * (th + 2)
            cands += [QRectF(box.left(), box.top() - th - 1 - d, tw, th),
                      QRectF(box.left(), box.bottom() + 1 + d, tw, th),
                      QRectF(box.left() - tw - 2 - d, box.top(), tw, th),
                      QRectF(box.right() + 2 + d, box.top(), tw, th)]
        inside = QRectF(self.rect())
        for c in cands:
            if inside.contains(c) and not any(c.intersects(q) for q in (*others, *placed)):
                return c
        for c in cands:  # crowded: at least never on another label
            if not any(c.intersects(q) for q in placed):
                return c
        return cands[0]

    def _draw_corner_text(self, p: QPainter) -> None:
        assert self.scene is not None
        sc = self.scene
        ax = VIEW_AXES[self.view][0]
        p.setPen(QColor(230, 230, 120))
        font = QFont(self.font())
        font.setBold(False)
        p.setFont(font)
        fm = QFontMetrics(font)
        mode = {"none": "", "mip": "MIP", "minip": "MinIP"}[sc.slab_mode]
        slab_txt = f"  {mode} {2 * sc.slab_half(self.view) * sc.spacing[ax] + sc.spacing[ax]:.0f} mm" if mode else ""
        p.drawText(6, fm.ascent() + 4, f"{self.view}  {sc.cursor[ax] + 1}/{sc.shape[ax]}{slab_txt}")
        w, lv = sc.window
        p.drawText(6, self.height() - 6, f"W {w:.0f}  L {lv:.0f}")
        # the orientation letters on a dark plate: a bright body edge under them (the axial "R" of
        # LIDC-IDRI-0001, the sagittal "P" of the demo) made them unreadable before
        left, right = _SIDE_LABELS[self.view]
        bold = QFont(font)
        bold.setBold(True)
        p.setFont(bold)
        fmb = QFontMetrics(bold)
        for letter, at_left in ((left, True), (right, False)):
            w, h = fmb.horizontalAdvance(letter) + 8, fmb.height() + 2
            x = 2 if at_left else self.width() - w - 2
            plate = QRectF(x, self.height() / 2 - h / 2, w, h)
            p.fillRect(plate, QColor(0, 0, 0, 200))
            p.drawText(plate, Qt.AlignmentFlag.AlignCenter, letter)

    # -- interaction -----------------------------------------------------------------------------
    def _voxel(self, pos: QPointF) -> tuple[float, float, float]:
        assert self.scene is not None
        drow, dcol = self.to_display(pos)
        return self.scene.voxel_at(self.view, drow, dcol)

    def mousePressEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self.scene is None:
            return
        pos = e.position()
        if e.button() == Qt.MouseButton.LeftButton and self.pick_mode:
            self.clicked_voxel.emit(*self._voxel(pos))
            return
        if e.button() == Qt.MouseButton.MiddleButton or (
                e.button() == Qt.MouseButton.LeftButton and e.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            self._drag = ("pan", pos, (self.pan.x(), self.pan.y()))
        elif e.button() == Qt.MouseButton.RightButton:
            self._drag = ("window", pos, self.scene.window)
        elif e.button() == Qt.MouseButton.LeftButton:
            self._drag = ("cursor", pos, (0.0, 0.0))
            self._set_cursor(pos)

    def _set_cursor(self, pos: QPointF) -> None:
        assert self.scene is not None
        self.scene.move_to(self._voxel(pos))
        self.cursor_moved.emit()

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self.scene is None:
            return
        pos = e.position()
        self.hovered.emit(*self._voxel(pos))
        if self._drag is None:
            return
        kind, start, base = self._drag
        d = pos - start
        if kind == "pan":
            self.pan = QPointF(base[0] + d.x(), base[1] + d.y())
            self.update()
        elif kind == "window":
            # 4 HU of width and 2 HU of level per pixel: a full lung-to-bone sweep in ~300 px
            self.scene.window = (max(1.0, base[0] + 4.0 * d.x()), base[1] - 2.0 * d.y())
            self.window_changed.emit()
        elif kind == "cursor":
            self._set_cursor(pos)

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        self._drag = None

    def wheelEvent(self, e: QWheelEvent) -> None:  # noqa: N802
        if self.scene is None:
            return
        steps = e.angleDelta().y() / 120.0
        if e.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom = float(min(max(self.zoom * (1.25 ** steps), 0.5), 16.0))
            self.update()
            return
        self.step(int(np.sign(steps)) if abs(steps) < 1 else int(steps))

    def step(self, n: int) -> None:
        """Move the view's slice by ``n`` (clipped to the volume)."""
        assert self.scene is not None
        ax = VIEW_AXES[self.view][0]
        cur = list(self.scene.cursor)
        cur[ax] = int(min(max(cur[ax] + n, 0), self.scene.shape[ax] - 1))
        self.scene.cursor = cur
        self.cursor_moved.emit()

    def reset_view(self) -> None:
        self.zoom, self.pan = 1.0, QPointF(0.0, 0.0)
        self.update()


class ViewerPanel(QWidget):
    """The three views side by side, each with its slice slider; keeps them in step."""

    hovered = Signal(float, float, float)
    changed = Signal()  # cursor, window or slab changed

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scene: Scene | None = None
        self.views = {v: SliceView(v) for v in VIEWS}
        self.sliders: dict[str, QSlider] = {}
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        for name, view in self.views.items():
            col = QVBoxLayout()
            col.setSpacing(2)
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setToolTip(f"{name} slice (mouse wheel over the view)")
            slider.setEnabled(False)
            slider.valueChanged.connect(lambda value, n=name: self._slider_moved(n, value))
            self.sliders[name] = slider
            col.addWidget(view, 1)
            col.addWidget(slider)
            row.addLayout(col, 1)
            view.cursor_moved.connect(self.sync)
            view.window_changed.connect(self.sync)
            view.hovered.connect(self.hovered)

    def set_scene(self, scene: Scene | None) -> None:
        self.scene = scene
        for name, v in self.views.items():
            v.scene = scene
            v._key = None  # a new scene: never the old one's cached picture
            v.reset_view()
            s = self.sliders[name]
            s.setEnabled(scene is not None)
            if scene is not None:
                s.blockSignals(True)
                s.setRange(0, scene.shape[VIEW_AXES[name][0]] - 1)
                s.blockSignals(False)
        self.sync()

    def _slider_moved(self, name: str, value: int) -> None:
        if self.scene is None:
            return
        ax = VIEW_AXES[name][0]
        if self.scene.cursor[ax] != value:
            cur = list(self.scene.cursor)
            cur[ax] = value
            self.scene.cursor = cur
            self.sync()

    def sync(self) -> None:
        """Sliders follow the cursor; every view repaints."""
        if self.scene is not None:
            for name, s in self.sliders.items():
                s.blockSignals(True)
                s.setValue(self.scene.cursor[VIEW_AXES[name][0]])
                s.blockSignals(False)
        for v in self.views.values():
            v.update()
        self.changed.emit()

    def set_pick_mode(self, on: bool) -> None:
        for v in self.views.values():
            v.pick_mode = on
            v.setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)
