"""What the expressions of one file hold: imports, value kinds, scopes and known operations.

``names`` resolves imported names, ``tags`` lists the value kinds, ``scopes``
holds what names, functions and classes are bound to, ``ops`` normalises
calls to known operations, and ``model`` answers the rules' questions.
"""
