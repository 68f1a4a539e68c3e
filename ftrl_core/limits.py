"""Range limits of the training data, enforced by the readers' kernels (one definition).

An importance weight above ``MAX_WEIGHT`` or a feature value beyond ``MAX_ABS_VALUE`` is a
bad row (E_WEIGHT, E_NUMBER naming its field) in every reader that takes them from the data
(JSON events, VW text) and so in ``ctr train`` and in the service alike. The value limit
applies to the values a learner sees: after repeats of a key are summed and to the products
of quadratic interactions too.

A field name (a JSON feature key, a VW namespace) is at most ``MAX_FIELD_NAME_BYTES`` bytes
of UTF-8 without control characters: names are kept with the model and quoted in errors.

Why: the learners keep their state in float32 (max 3.4e38). With |x| <= 1e9 and a weight
<= 1e6, one event's gradient |g| = |p - y| |x| w is at most 1e15, and g^2 <= 1e30 stays
finite; past them, one event (a weight of 1e200, say) can make a coordinate's state
infinite, its weight NaN, and every later prediction that uses it NaN.
"""

from __future__ import annotations

#: the largest importance weight accepted
MAX_WEIGHT = 1e6
#: the largest |value| of a feature (interaction products and summed repeats included)
MAX_ABS_VALUE = 1e9
#: the longest field name, in bytes of UTF-8
MAX_FIELD_NAME_BYTES = 256
