"""The architecture spec and the flat parameter layout."""

import pickle

import numpy as np
import pytest

import fastbp


def test_defaults_and_repr():
    net = fastbp.MLP([4, 16, 3])
    assert (net.hidden, net.output, net.loss) == ("sigmoid", "softmax", "cross_entropy")
    assert net.n_params == 4 * 16 + 16 + 16 * 3 + 3
    assert repr(net) == (
        "MLP(sizes=[4, 16, 3], hidden='sigmoid', output='softmax', loss='cross_entropy')"
    )
    assert fastbp.MLP([2, 1], output="identity").loss == "mse"
    assert fastbp.MLP([2, 1], output="sigmoid").loss == "cross_entropy"


def test_immutable_hashable_picklable():
    net = fastbp.MLP([3, 5, 2], hidden="tanh")
    with pytest.raises(AttributeError):
        net.sizes = [1, 2]
    net.sizes.append(7)  # a copy: the spec is unchanged
    assert net.sizes == [3, 5, 2]
    assert net == fastbp.MLP([3, 5, 2], hidden="tanh")
    assert len({net, fastbp.MLP([3, 5, 2], hidden="tanh")}) == 1
    assert pickle.loads(pickle.dumps(net)) == net


def test_layout_is_W_then_b_per_layer():
    net = fastbp.MLP([2, 3, 1], output="identity")
    theta = np.arange(net.n_params, dtype=float)
    (W1, b1), (W2, b2) = net.unpack(theta)
    np.testing.assert_array_equal(W1, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(b1, [6, 7, 8])
    np.testing.assert_array_equal(W2, [[9], [10], [11]])
    np.testing.assert_array_equal(b2, [12])
    W1[0, 0] = -1  # views into theta
    assert theta[0] == -1


@pytest.mark.parametrize("population", [None, 3])
def test_pack_inverts_unpack(population):
    net = fastbp.MLP([3, 4, 5, 2])
    theta = net.init(seed=1, population=population)
    packed = net.pack(net.unpack(theta))
    np.testing.assert_array_equal(packed, theta)
    assert packed.shape == theta.shape
    assert not np.shares_memory(packed, theta)


def test_init_is_seeded_and_typed():
    net = fastbp.MLP([5, 7, 3])
    np.testing.assert_array_equal(net.init(seed=3), net.init(seed=3))
    assert not np.array_equal(net.init(seed=3), net.init(seed=4))
    assert net.init(dtype=np.float32).dtype == np.float32
    population = net.init(seed=0, population=4)
    assert population.shape == (4, net.n_params)
    assert len({tuple(row) for row in population}) == 4
    (W1, b1), _ = net.unpack(net.init())
    assert np.all(b1 == 0) and np.abs(W1).max() <= np.sqrt(6 / 12)
