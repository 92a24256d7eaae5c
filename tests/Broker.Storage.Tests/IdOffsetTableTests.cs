using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

/// <summary>
/// The deduplication window's open-addressing table against a <see cref="Dictionary{TKey, TValue}"/>: keys that share
/// their low bits (long probe runs, and removals in the middle of them that shift later entries back), growth, and
/// shrinking after the window empties.
/// </summary>
public sealed class IdOffsetTableTests
{
    // Keys from a small set of homes, so runs of colliding keys form and wrap around the table's end.
    private static UInt128 CollidingKey(Random random) => new((ulong)random.NextInt64(), (ulong)random.Next(8) << 10 | (ulong)random.Next(4) << 62 | 1023);

    [Fact]
    public void Lookups_agree_with_a_dictionary_through_inserts_overwrites_and_removals_in_probe_runs()
    {
        var table = new IdOffsetTable();
        var reference = new Dictionary<UInt128, long>();
        var keys = new List<UInt128>();
        var random = new Random(11);
        for (int step = 0; step < 30_000; step++)
        {
            int action = random.Next(10);
            if (keys.Count == 0 || action < 5)
            {
                var key = random.Next(10) == 0 ? CollidingKey(random) : new UInt128((ulong)random.NextInt64(), (ulong)random.NextInt64());
                Assert.Equal(!reference.ContainsKey(key), table.Set(key, step));
                if (!reference.ContainsKey(key))
                    keys.Add(key);
                reference[key] = step;
            }
            else if (action < 7)
            {
                // Overwrite an existing key (an id published again after it expired).
                var key = keys[random.Next(keys.Count)];
                Assert.False(table.Set(key, step));
                reference[key] = step;
            }
            else
            {
                int index = random.Next(keys.Count);
                var key = keys[index];
                // Removal with a stale offset leaves the newer mapping alone.
                Assert.False(table.Remove(key, reference[key] + 1));
                Assert.True(table.Remove(key, reference[key]));
                Assert.False(table.Remove(key, reference[key]));
                reference.Remove(key);
                keys[index] = keys[^1];
                keys.RemoveAt(keys.Count - 1);
            }
            Assert.Equal(reference.Count, table.Count);
            if (step % 97 == 0)
            {
                foreach (var (key, offset) in reference)
                {
                    Assert.True(table.TryGet(key, out long found));
                    Assert.Equal(offset, found);
                }
                Assert.False(table.TryGet(CollidingKey(random) + ((UInt128)1 << 100), out _));
            }
        }
        Assert.True(table.Capacity >= 2 * table.Count);
    }

    [Fact]
    public void It_grows_past_its_first_size_and_shrinks_once_emptied_keeping_what_is_left()
    {
        var table = new IdOffsetTable();
        int initial = table.Capacity;
        for (int i = 0; i < 100_000; i++)
            table.Set(new UInt128((ulong)i, (ulong)i * 0x9E3779B97F4A7C15), i);
        Assert.True(table.Capacity >= 200_000);
        for (int i = 0; i < 99_990; i++)
            Assert.True(table.Remove(new UInt128((ulong)i, (ulong)i * 0x9E3779B97F4A7C15), i));
        table.Shrink();
        Assert.Equal(initial, table.Capacity);
        Assert.Equal(10, table.Count);
        for (int i = 99_990; i < 100_000; i++)
        {
            Assert.True(table.TryGet(new UInt128((ulong)i, (ulong)i * 0x9E3779B97F4A7C15), out long offset));
            Assert.Equal(i, offset);
        }
    }
}
