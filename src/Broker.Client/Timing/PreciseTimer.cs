using System.Diagnostics;

namespace Broker.Client;

/// <summary>
/// Short waits that end when they should: <see cref="Task.Delay(TimeSpan)"/> and <c>CancelAfter</c> go by .NET's
/// low-resolution clock, which on Linux moves in kernel ticks (4 ms on this project's Debian VM, CONFIG_HZ=250, as on
/// most distribution kernels): there <c>Task.Delay(1 ms)</c> takes 4.3 ms and <c>Task.Delay(5 ms)</c> 8.4 ms at the
/// median (docs/perf.md, "Timers"). A producer's 5 ms linger became 8–9 ms, a consumer's 1 ms batch wait 4 ms.
/// <para>Waits of up to <see cref="LongestPrecise"/> are kept here instead, in a heap served by one background thread
/// that sleeps with <see cref="Monitor.Wait(object, int)"/> (a timed futex wait: measured 5.1 ms for 5) and fires each
/// entry at its time or up to about a millisecond after it, never before, on the thread pool. Longer waits go to .NET's timers,
/// whose few milliseconds do not matter there; so the heap only ever holds the waits of the next
/// <see cref="LongestPrecise"/>, whatever is abandoned.</para>
/// </summary>
internal static class PreciseTimer
{
    /// <summary>The longest wait served here; longer ones use .NET's timers.</summary>
    public static readonly TimeSpan LongestPrecise = TimeSpan.FromMilliseconds(50);

    private static readonly object Gate = new();
    private static readonly PriorityQueue<(Action<object?> Callback, object? State), long> Due = new();
    private static Thread? _thread;

    /// <summary>A task that completes after <paramref name="delay"/> (at once when it is not positive).</summary>
    public static Task Delay(TimeSpan delay)
    {
        if (delay <= TimeSpan.Zero)
            return Task.CompletedTask;
        if (delay > LongestPrecise)
            return Task.Delay(delay);
        // Completed from a pool thread already (see Run): continuations may run inline.
        var done = new TaskCompletionSource();
        Schedule(delay, static state => ((TaskCompletionSource)state!).TrySetResult(), done);
        return done.Task;
    }

    /// <summary>
    /// Cancels <paramref name="source"/> after <paramref name="delay"/> (nothing when it is disposed by then; never
    /// for a delay beyond what .NET's timers take, about 49 days, such as <see cref="TimeSpan.MaxValue"/>).
    /// </summary>
    public static void CancelAfter(CancellationTokenSource source, TimeSpan delay)
    {
        if (delay > LongestPrecise)
        {
            if (delay.TotalMilliseconds < uint.MaxValue - 1)
                source.CancelAfter(delay);
            return;
        }
        Schedule(delay, static state =>
        {
            try
            {
                ((CancellationTokenSource)state!).Cancel();
            }
            catch (ObjectDisposedException)
            {
                // Its wait ended first and it was disposed: nothing is waiting for this any more.
            }
        }, source);
    }

    /// <summary>
    /// <paramref name="span"/> in <see cref="Stopwatch"/> ticks, the clock every wait here is measured by, held far
    /// below overflow when added to a timestamp (<see cref="TimeSpan.MaxValue"/> becomes about 73 years).
    /// </summary>
    public static long StopwatchTicks(TimeSpan span) => (long)Math.Min(span.TotalSeconds * Stopwatch.Frequency, long.MaxValue / 4);

    private static void Schedule(TimeSpan delay, Action<object?> callback, object? state)
    {
        long due = Stopwatch.GetTimestamp() + StopwatchTicks(delay);
        lock (Gate)
        {
            if (_thread is null)
            {
                _thread = new Thread(Run) { IsBackground = true, Name = "Broker.Client precise timer" };
                _thread.Start();
            }
            bool earliest = !Due.TryPeek(out _, out long first) || due < first;
            Due.Enqueue((callback, state), due);
            if (earliest)
                Monitor.Pulse(Gate);
        }
    }

    private static void Run()
    {
        long oneMillisecond = Stopwatch.Frequency / 1000;
        lock (Gate)
        {
            while (true)
            {
                if (!Due.TryPeek(out var entry, out long due))
                {
                    Monitor.Wait(Gate);
                    continue;
                }
                long early = due - Stopwatch.GetTimestamp();
                if (early > 0)
                {
                    // Rounded up to whole milliseconds: never before the time, at most a millisecond after (a caller
                    // woken early would only wait again). A new earlier entry pulses it.
                    Monitor.Wait(Gate, (int)Math.Min((early + oneMillisecond - 1) / oneMillisecond, int.MaxValue));
                    continue;
                }
                Due.Dequeue();
                ThreadPool.UnsafeQueueUserWorkItem(entry.Callback, entry.State, preferLocal: false);
            }
        }
    }
}
