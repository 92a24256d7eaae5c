namespace Broker.Storage.Groups;

/// <summary>
/// Messages a group with a delivery order of its own (priority levels, or newest first) has read ahead and not yet
/// handed out, and the rule that picks the next one. Without either the group needs none of this: it delivers in log
/// order as it reads.
/// <para><b>Priority</b> (2 to <see cref="MaxLevels"/> levels): the next delivery is the oldest ready message of the
/// highest level that has one, except that at least one delivery in <see cref="OldestTurnEvery"/> goes to the oldest
/// ready message of any level, so a low-priority message under a steady stream of urgent ones still goes out (the
/// anti-starvation rule). <b>Newest first</b> (LIFO): the most recently published ready message.</para>
/// Pure state, no locks: <see cref="ConsumerGroupState"/> owns it.
/// </summary>
internal sealed class ReadyMessages
{
    /// <summary>Most priority levels a group may have.</summary>
    public const int MaxLevels = 32;

    /// <summary>Every this many deliveries, one goes to the oldest ready message whatever its priority.</summary>
    public const int OldestTurnEvery = 10;

    private readonly Queue<MessageLocation>[] _levels;
    // Newest first: one stack instead of the levels.
    private readonly Stack<MessageLocation>? _newest;
    private int _sinceOldest;

    /// <param name="levels">Priority levels (1: none).</param>
    /// <param name="newestFirst">Newest first instead of by priority (the group then has one level).</param>
    public ReadyMessages(int levels, bool newestFirst)
    {
        _levels = [.. Enumerable.Range(0, newestFirst ? 1 : Math.Clamp(levels, 1, MaxLevels)).Select(_ => new Queue<MessageLocation>())];
        _newest = newestFirst ? new Stack<MessageLocation>() : null;
    }

    public int Count { get; private set; }

    /// <summary>The level a message of <paramref name="priority"/> goes to: the highest the group has, at most.</summary>
    public int LevelOf(int priority) => Math.Clamp(priority, 0, _levels.Length - 1);

    /// <summary>A message read ahead, ready to go out, with its priority (0 is the lowest).</summary>
    public void Add(MessageLocation location, int priority)
    {
        if (_newest is not null)
            _newest.Push(location);
        else
            _levels[LevelOf(priority)].Enqueue(location);
        Count++;
    }

    /// <summary>Takes the next message to hand out, by the group's order.</summary>
    public bool TryTake(out MessageLocation location)
    {
        location = default;
        if (Count == 0)
            return false;
        Count--;
        if (_newest is not null)
        {
            location = _newest.Pop();
            return true;
        }
        int highest = -1, oldest = -1;
        for (int level = _levels.Length - 1; level >= 0; level--)
        {
            if (!_levels[level].TryPeek(out var head))
                continue;
            if (highest < 0)
                highest = level;
            if (oldest < 0 || head.Offset < _levels[oldest].Peek().Offset)
                oldest = level;
        }
        // Strict priority, but never more than OldestTurnEvery - 1 deliveries in a row past the oldest ready message.
        int from = highest == oldest || _sinceOldest >= OldestTurnEvery - 1 ? oldest : highest;
        _sinceOldest = from == oldest ? 0 : _sinceOldest + 1;
        location = _levels[from].Dequeue();
        return true;
    }

    /// <summary>Offsets read ahead and not handed out, for invariant checks.</summary>
    public IEnumerable<long> Offsets => _levels.SelectMany(level => level.Select(l => l.Offset)).Concat(_newest?.Select(l => l.Offset) ?? []);
}
