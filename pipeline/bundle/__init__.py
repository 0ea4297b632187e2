"""A bundle: the folder `edgeq build` writes and an app ships.

* ``layout``: the name of every file in a bundle (and of the staging and --keep-build markers).
* ``staging``: where a build writes its bundle, the --out policy, and the atomic swap into place.
* ``verify``: `edgeq verify` - is this folder exactly the bundle edgeq wrote?
* ``reader``: using a finished bundle on its own, as an app would (`edgeq translate`).

This module imports none of them: ``layout`` is read by the tasks that write files, the others
by the build and the command line.
"""
__all__: list[str] = []
