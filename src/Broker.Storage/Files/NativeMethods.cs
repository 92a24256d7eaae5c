using System.Runtime.InteropServices;

namespace Broker.Storage.Files;

/// <summary>The few libc calls .NET does not expose: fsync of a directory.</summary>
internal static partial class NativeMethods
{
    // O_RDONLY | O_DIRECTORY on Linux.
    public const int ReadOnlyDirectory = 0x10000;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int Fsync(int descriptor);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int descriptor);
}
