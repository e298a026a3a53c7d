"""Remediation: configured actions, guards, the pipeline, escalation and learning.

guards -> execute -> verify -> (on failure) rollback -> verify -> escalate; every
step is an audit record linked by an action id. Submodules import lazily: this
package must stay light to import.
"""
