"""recbole_m6rec: M6-Rec style language-model recommenders as a RecBole 1.2.x plugin.

Importing this package has no side effects: it patches nothing and reads no command line.
"""

__version__ = "0.1.0"
