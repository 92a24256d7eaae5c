namespace Broker.Storage.Files;

/// <summary>Tells a full disk from other device errors: the one a broker can recover from by itself once space is freed.</summary>
internal static class DiskErrors
{
    // Linux errno values, which .NET keeps in an IOException's HResult for errors it has no type of its own for.
    private const int NoSpaceLeft = 28;     // ENOSPC
    private const int QuotaExceeded = 122;  // EDQUOT

    /// <summary>True when <paramref name="errno"/> (as FASTER's completion callbacks carry it) means no space is left.</summary>
    public static bool IsOutOfSpace(uint errno) => errno is NoSpaceLeft or QuotaExceeded;

    /// <summary>True when <paramref name="error"/> or an exception inside it is an out-of-space I/O error.</summary>
    public static bool IsOutOfSpace(Exception? error)
    {
        for (; error is not null; error = error.InnerException)
        {
            if (error is IOException io && IsOutOfSpace((uint)(io.HResult & 0xFFFF)))
                return true;
            if (error is AggregateException aggregate && aggregate.InnerExceptions.Any(IsOutOfSpace))
                return true;
        }
        return false;
    }
}
