namespace Broker.Storage.Logs;

/// <summary>
/// A wake-up for async waiters. Read <see cref="WaitTask"/> first, then check the condition, then await the
/// task: a <see cref="Set"/> between the check and the await is never lost.
/// </summary>
public sealed class AsyncSignal
{
    private TaskCompletionSource _current = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes at the next <see cref="Set"/>.</summary>
    public Task WaitTask => Volatile.Read(ref _current).Task;

    /// <summary>Wakes everyone waiting on a task taken before this call.</summary>
    public void Set()
    {
        var previous = Interlocked.Exchange(ref _current, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        previous.TrySetResult();
    }
}
