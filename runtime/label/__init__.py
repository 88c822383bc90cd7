"""``edgecls label DIR``: label the frames ``edgecls run --collect DIR`` kept, in a browser; writes an image folder
(``DIR/labelled/<class>/``) that ``edgecls train`` and ``edgecls calibrate --data`` read, and ``DIR/labels.json``."""
