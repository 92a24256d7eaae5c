using HdrHistogram;

namespace Broker.Perf;

/// <summary>A fixed-size set of message indexes, safe for concurrent use.</summary>
internal sealed class ConcurrentBitSet(long size)
{
    private readonly long[] _words = new long[(size + 63) / 64];

    /// <summary>Sets the bit; false when it was set already.</summary>
    public bool TrySet(long index)
    {
        ref long word = ref _words[index >> 6];
        long mask = 1L << (int)(index & 63);
        while (true)
        {
            long current = Volatile.Read(ref word);
            if ((current & mask) != 0)
                return false;
            if (Interlocked.CompareExchange(ref word, current | mask, current) == current)
                return true;
        }
    }

    public bool Contains(long index) => (Volatile.Read(ref _words[index >> 6]) & (1L << (int)(index & 63))) != 0;
}

/// <summary>What one consumer group saw: deliveries, acks, duplicates, latency.</summary>
internal sealed class GroupTracker(long messages)
{
    private long _delivered;
    private long _acked;
    private long _duplicates;
    private long _nacked;
    private long _firstDelivery;
    private long _lastDeliveryLessWait;

    public ConcurrentBitSet Acked { get; } = new(messages);
    public LongConcurrentHistogram DeliverLatency { get; } = Histograms.Create();
    public long Delivered => Interlocked.Read(ref _delivered);
    public long AckConfirmed => Interlocked.Read(ref _acked);
    public long Duplicates => Interlocked.Read(ref _duplicates);
    public long Nacked => Interlocked.Read(ref _nacked);

    /// <summary>Stopwatch timestamp of the group's first delivery frame (0 until one arrived).</summary>
    public long FirstDeliveryTimestamp => Interlocked.Read(ref _firstDelivery);

    public void NoteFirstDelivery()
    {
        if (Interlocked.Read(ref _firstDelivery) == 0)
            Interlocked.CompareExchange(ref _firstDelivery, System.Diagnostics.Stopwatch.GetTimestamp(), 0);
    }

    /// <summary>
    /// Stopwatch timestamp of the group's last delivery, a scheduled message's moved back by its delay: when the group
    /// had everything but for the waits the workload asked for (0 until a delivery arrived).
    /// </summary>
    public long LastDeliveryLessWaitTimestamp => Interlocked.Read(ref _lastDeliveryLessWait);

    public void NoteDelivery(long timestampLessWait)
    {
        long current;
        while (timestampLessWait > (current = Interlocked.Read(ref _lastDeliveryLessWait))
            && Interlocked.CompareExchange(ref _lastDeliveryLessWait, timestampLessWait, current) != current)
        {
        }
    }

    public void CountDelivered(int count) => Interlocked.Add(ref _delivered, count);
    public void CountDuplicate() => Interlocked.Increment(ref _duplicates);
    public void CountNacked(int count) => Interlocked.Add(ref _nacked, count);
    public void CountAckConfirmed(int count) => Interlocked.Add(ref _acked, count);
}

internal static class Histograms
{
    /// <summary>Microseconds, up to 10 minutes, 3 significant digits.</summary>
    public static LongConcurrentHistogram Create() => new(1, 600_000_000, 3);

    /// <summary>Microseconds since a timestamp, never negative (HdrHistogram refuses negative values).</summary>
    public static long MicrosecondsSince(long stopwatchTimestamp) =>
        Math.Max(0, (long)(System.Diagnostics.Stopwatch.GetElapsedTime(stopwatchTimestamp).TotalMilliseconds * 1000));
}
